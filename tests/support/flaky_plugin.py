"""A model plugin that raises inside the model after a given number of calls: a failing run
for the sweep and report tests (write it to a file named in a recipe's ``plugins:``)."""

FLAKY_PLUGIN = """\
from pydantic import Field
from bbvi_kit import register_model
from bbvi_kit_plugins.gaussian_vae import GaussianVAE, GaussianVAEOptions


class Options(GaussianVAEOptions):
    fail_at: int = Field(0, description="raise inside the model at this call (0: never)")


@register_model("{name}")
class FlakyVAE(GaussianVAE):
    Options = Options

    def __init__(self, data, **options):
        super().__init__(data, **options)
        self.calls = 0

    def model(self, x):
        self.calls += 1
        if self.options.fail_at and self.calls >= self.options.fail_at:
            raise RuntimeError("injected failure")
        return super().model(x)
"""
