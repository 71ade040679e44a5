"""Dataset plugins (one file per dataset family) and batching."""

from bbvi_kit.data.base import DataInfo, DatasetPlugin, DataSplits, as_args, batch_loader
from bbvi_kit.data.digits import Digits

__all__ = ["DataInfo", "DatasetPlugin", "DataSplits", "Digits", "as_args", "batch_loader"]
