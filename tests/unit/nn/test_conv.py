"""The paper's convolutional encoder/decoder in the Gaussian VAE family (Surendran et al., AISTATS
2025): parameter counts of the CelebA and CIFAR-100 nets, particle dims, depth options, shape
errors, and training through the loss and the engine."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import TensorDataset

from bbvi_kit import ELBO, IWAE, Adam, BBVILoss, DataInfo, InputError, Pathwise, Trainer, TrainingOptions
from bbvi_kit.nn import ConvDecoder, ConvEncoder, GeneralizedSoftClipping, conv_decoder, conv_encoder
from bbvi_kit.recipe import resolve
from bbvi_kit.registry import models
from bbvi_kit.runner import run_recipe
from bbvi_kit_plugins.gaussian_vae import GaussianVAE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"network": "conv", "channels": [4, 8], "hidden": [16], "latent_dim": 3}
TINY_INFO = DataInfo(name="toy", shape=(2, 16, 16), num_train=24, num_test=8)


def info(shape: tuple[int, ...]) -> DataInfo:
    return DataInfo(name="toy", shape=shape, num_train=10, num_test=2)


def count(params) -> int:
    return sum(p.numel() for p in params)


def conv_params(c_in: int, c_out: int, k: int = 4) -> int:
    """A (transposed) convolution with bias: c_in c_out k^2 weights + c_out biases."""
    return c_in * c_out * k * k + c_out


def linear_params(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# -- the paper's nets ----------------------------------------------------------------------------
def test_celeba_net_has_the_papers_parameter_count() -> None:
    """Enc conv 3-64-128-256-512 -> 8192 -> 1024 -> heads to 100; dec 100-1024-8192 -> (512, 4, 4)
    -> convT 512-256-128-64-3: about 22.6M parameters."""
    encoder = (conv_params(3, 64) + conv_params(64, 128) + conv_params(128, 256) + conv_params(256, 512)
               + linear_params(512 * 4 * 4, 1024))
    heads = 2 * linear_params(1024, 100)
    decoder = (linear_params(100, 1024) + linear_params(1024, 512 * 4 * 4)
               + conv_params(512, 256) + conv_params(256, 128) + conv_params(128, 64) + conv_params(64, 3))
    assert encoder + heads + decoder == 22_607_435

    vae = GaussianVAE(info((3, 64, 64)), network="conv", channels=[64, 128, 256, 512], hidden=[1024],
                      latent_dim=100)
    groups = vae.parameter_groups()
    assert count(groups["phi"]) == encoder + heads
    assert count(groups["theta"]) == decoder
    total = count(vae.parameters())
    assert total == encoder + heads + decoder
    assert abs(total - 22.6e6) / 22.6e6 < 0.01
    assert vae.decoder.deepest == (512, 4, 4)


def test_cifar100_net_has_the_papers_parameter_count() -> None:
    """Enc conv 3-32-64-128 -> 2048 -> 256 -> heads to 100; the decoder mirrors: about 1.46M."""
    encoder = conv_params(3, 32) + conv_params(32, 64) + conv_params(64, 128) + linear_params(2048, 256)
    heads = 2 * linear_params(256, 100)
    decoder = (linear_params(100, 256) + linear_params(256, 2048)
               + conv_params(128, 64) + conv_params(64, 32) + conv_params(32, 3))
    assert encoder + heads + decoder == 1_459_211

    vae = GaussianVAE(info((3, 32, 32)), network="conv", channels=[32, 64, 128], hidden=[256], latent_dim=100)
    assert count(vae.parameter_groups()["phi"]) == encoder + heads
    assert count(vae.parameter_groups()["theta"]) == decoder
    total = count(vae.parameters())
    assert total == 1_459_211 and abs(total - 1.46e6) / 1.46e6 < 0.01


def test_conv_layers_are_kernel4_stride2_padding1_with_the_activation_between() -> None:
    activation = {"name": "generalized_soft_clipping", "sharpness": 2.0}
    vae = GaussianVAE(TINY_INFO, **{**TINY, "activation": activation})
    convs = [m for m in vae.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 4
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) for m in convs)
    # After every hidden layer (4 conv + 1 fc in the encoder, 2 fc + 1 convT in the decoder); none
    # after the decoder's last layer, whose output goes through the sigmoid / is the logits.
    clips = [m for m in vae.modules() if isinstance(m, GeneralizedSoftClipping)]
    assert len(clips) == 2 + 1 + 2 + 1
    assert all(m.options.sharpness == 2.0 for m in clips)
    assert isinstance(vae.decoder.convs[-1], nn.ConvTranspose2d)


# -- shapes ------------------------------------------------------------------------------------
def test_networks_accept_particle_dims_and_restore_them() -> None:
    torch.manual_seed(0)
    vae = GaussianVAE(TINY_INFO, **TINY)
    x = torch.rand(5, 2, 16, 16)
    loc, scale = vae.encode(x)
    assert loc.shape == scale.shape == (5, 3)
    # Extra leading dims: the same per-example values as the plain batch.
    loc4, scale4 = vae.encode(x.expand(4, 5, 2, 16, 16))
    assert loc4.shape == (4, 5, 3)
    torch.testing.assert_close(loc4, loc.expand(4, 5, 3))
    torch.testing.assert_close(scale4, scale.expand(4, 5, 3))

    z = torch.randn(2, 4, 5, 3)
    out = vae.decode(z)
    assert out.shape == (2, 4, 5, 2, 16, 16)
    torch.testing.assert_close(out[1, 2], vae.decode(z[1, 2]))
    torch.testing.assert_close(vae.decode(z[0, 0, 0]), out[0, 0, 0])  # no leading dims at all
    mean = torch.sigmoid(out)
    assert ((mean > 0) & (mean < 1)).all()


@pytest.mark.parametrize("name", ["gaussian_vae", "iwae"])
def test_model_traces_particles_with_bounded_decoder_means(name: str) -> None:
    torch.manual_seed(1)
    pyro.set_rng_seed(1)
    vae = models.get(name)(TINY_INFO, **TINY)
    x = torch.rand(4, 2, 16, 16)
    result = BBVILoss(vae.model, vae.guide, IWAE(num_particles=3), Pathwise())(x)
    assert result.particles.guide_trace.nodes["z"]["value"].shape == (3, 4, 3)
    assert result.particles.log_weights.shape == (3, 4)
    mean = result.particles.model_trace.nodes["x"]["fn"].base_dist.loc
    assert mean.shape == (3, 4, 2, 16, 16)
    assert ((mean > 0) & (mean < 1)).all()


# -- depth options (the paper's Figure 5) ------------------------------------------------------
@pytest.mark.parametrize("extra", [1, 2])
def test_extra_fc_layers_add_exactly_their_parameters(extra: int) -> None:
    base = GaussianVAE(TINY_INFO, **TINY)
    deep = GaussianVAE(TINY_INFO, **TINY, extra_fc_layers=extra)
    # Encoder: `extra` Linear(16, 16) after the last hidden layer; decoder: the mirror image.
    assert count(deep.parameter_groups()["phi"]) - count(base.parameter_groups()["phi"]) == extra * linear_params(16, 16)
    assert count(deep.parameter_groups()["theta"]) - count(base.parameter_groups()["theta"]) == extra * linear_params(16, 16)
    assert deep.decode(torch.randn(2, 5, 3)).shape == (2, 5, 2, 16, 16)


def test_extra_fc_layers_use_the_widths_next_to_the_latent_code() -> None:
    vae = GaussianVAE(TINY_INFO, **{**TINY, "hidden": [16, 12], "decoder_hidden": [10, 20]}, extra_fc_layers=1)
    enc = [m.out_features for m in vae.encoder.fc if isinstance(m, nn.Linear)]
    dec = [m.out_features for m in vae.decoder.fc if isinstance(m, nn.Linear)]
    assert enc == [16, 12, 12]
    assert dec == [10, 10, 20, 8 * 4 * 4]


def test_extra_fc_layers_deepen_the_mlp_too() -> None:
    shape = (1, 4, 4)
    base = GaussianVAE(info(shape), latent_dim=2, hidden=[8, 6])
    deep = GaussianVAE(info(shape), latent_dim=2, hidden=[8, 6], extra_fc_layers=2)
    assert count(deep.parameters()) - count(base.parameters()) == 2 * 2 * linear_params(6, 6)
    assert deep.decode(torch.randn(3, 2)).shape == (3, 1, 4, 4)


@pytest.mark.parametrize("extra", [1, 2])
def test_extra_conv_layers_add_exactly_their_parameters(extra: int) -> None:
    base = GaussianVAE(TINY_INFO, **TINY)
    deep = GaussianVAE(TINY_INFO, **TINY, extra_conv_layers=extra)
    # `extra` Conv2d(8, 8, kernel 3) at the deepest level of the encoder, mirrored in the decoder.
    per_side = extra * conv_params(8, 8, k=3)
    assert count(deep.parameter_groups()["phi"]) - count(base.parameter_groups()["phi"]) == per_side
    assert count(deep.parameter_groups()["theta"]) - count(base.parameter_groups()["theta"]) == per_side
    extras = [m for m in deep.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(extras) == 2 * extra
    assert all(m.stride == (1, 1) and m.padding == (1, 1) for m in extras)
    assert deep.encode(torch.rand(2, 5, 2, 16, 16))[0].shape == (2, 5, 3)
    assert deep.decode(torch.randn(2, 5, 3)).shape == (2, 5, 2, 16, 16)


def test_extra_conv_layers_need_the_conv_network() -> None:
    with pytest.raises(ValidationError, match="extra convolutional layers need network: conv"):
        GaussianVAE(info((1, 4, 4)), latent_dim=2, hidden=[8], extra_conv_layers=1)
    with pytest.raises(InputError, match=r"model\.extra_conv_layers: extra convolutional layers need network: conv"):
        resolve({"model": {"name": "iwae", "extra_conv_layers": 1}})


def test_extra_fc_layers_need_a_width_to_repeat() -> None:
    with pytest.raises(InputError, match=r"model\.extra_fc_layers: "):
        resolve({"model": {"name": "gaussian_vae", "hidden": [], "extra_fc_layers": 1}})


# -- shape errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 14, 16), (2, 16, 6), (256,), (16, 16)])
def test_a_shape_the_convs_cannot_halve_is_an_input_error(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError) as excinfo:
        GaussianVAE(info(shape), **TINY)
    message = str(excinfo.value)
    assert message.startswith("model.channels: ") and "\n" not in message
    assert str(shape) in message and "2^2 = 4" in message
    assert excinfo.value.exit_code == 2


def test_the_default_channels_name_the_digits_shape() -> None:
    recipe = resolve({"model": {"name": "beta_vae", "network": "conv"}, "data": {"name": "digits"}})
    with pytest.raises(InputError, match=r"model\.channels: .*\(1, 8, 8\)"):
        recipe.model.build(DataInfo(name="digits", shape=(1, 8, 8), num_train=10, num_test=2))


def test_builders_check_shapes_and_mirror_each_other() -> None:
    with pytest.raises(ValueError, match="divisible by 2\\^3 = 8"):
        conv_encoder((1, 12, 12), [2, 4, 8], [5], "tanh")
    encoder = conv_encoder((1, 8, 24), [2, 4], [5], "relu")
    decoder = conv_decoder(3, (1, 8, 24), [2, 4], [5], "relu")
    assert isinstance(encoder, ConvEncoder) and isinstance(decoder, ConvDecoder)
    assert encoder(torch.rand(7, 1, 8, 24)).shape == (7, 5)
    assert decoder.deepest == (4, 2, 6)
    assert decoder(torch.randn(2, 7, 3)).shape == (2, 7, 1, 8, 24)


# -- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("gaussian_vae", {}),
        ("iwae", {"likelihood": "bernoulli", "extra_fc_layers": 1, "extra_conv_layers": 1}),
        ("beta_vae", {"activation": "generalized_soft_clipping"}),
    ],
)
def test_iwae_loss_gives_finite_gradients_for_every_parameter(name: str, options: dict) -> None:
    torch.manual_seed(2)
    pyro.set_rng_seed(2)
    vae = models.get(name)(TINY_INFO, **TINY, **options)
    x = torch.rand(3, 2, 16, 16)
    result = BBVILoss(vae.model, vae.guide, IWAE(num_particles=3), Pathwise())(x)
    assert torch.isfinite(result.loss)
    result.surrogate.backward()
    for pname, p in vae.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    groups = vae.parameter_groups()
    for group in ("phi", "theta"):
        assert sum(float((p.grad**2).sum()) for p in groups[group]) > 0
    ids = [id(p) for g in groups.values() for p in g]
    assert sorted(ids) == sorted(id(p) for p in vae.parameters())


def test_a_tiny_conv_vae_learns_with_the_trainer() -> None:
    pyro.set_rng_seed(3)
    vae = GaussianVAE(TINY_INFO, **TINY)
    # Random [0, 1] images around one random image: the decoder has per-pixel means to learn (on
    # i.i.d. uniform pixels the initial mean 0.5 is already the best constant).
    g = torch.Generator().manual_seed(3)
    base = torch.rand(2, 16, 16, generator=g)
    data = TensorDataset((base + 0.05 * torch.randn(24, 2, 16, 16, generator=g)).clamp(0.0, 1.0))
    trainer = Trainer(
        vae.model,
        vae.guide,
        objective=ELBO(),
        estimator=Pathwise(),
        optimizer=Adam(lr=1e-2),
        training=TrainingOptions(batch_size=8, epochs=5, seed=3, progress=False, device="cpu"),
        parameter_groups=vae.parameter_groups,
        modules=[vae],
    )
    history = trainer.fit(data)
    losses = [row["loss"] for row in history.metrics]
    assert len(losses) == 15 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 200.0  # nats per example; starts near 1440
    assert history.metrics[0]["minibatch_grad_norm_sq_phi"] > 0 and history.metrics[0]["minibatch_grad_norm_sq_theta"] > 0


def test_a_conv_recipe_runs_on_digits(tmp_path) -> None:
    recipe = resolve({
        "name": "conv_digits",
        "model": {"name": "iwae", "network": "conv", "channels": [4, 8], "hidden": [16], "latent_dim": 2},
        "objective": {"name": "iwae", "num_particles": 3},
        "data": {"name": "digits"},
        "training": {"batch_size": 32, "iterations": 4, "eval_every": 4, "progress": False, "device": "cpu"},
    })
    history = run_recipe(recipe, tmp_path)
    assert len(history.metrics) == 4 and all(math.isfinite(r["loss"]) for r in history.metrics)
    assert len(history.evals) == 1 and math.isfinite(history.evals[0]["test_loss"])
