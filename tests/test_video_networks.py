"""torchvision's S3D, Swin3D and MViT as video encoders (issue 21): weights files load into
them, short clips are lengthened for S3D's strides, MViT reads its position embeddings
unchanged at the clip size they were learnt for and interpolated at others, and each asks
for its weights' frame size and normalisation. (Shapes, gradients and freezing are checked
for every registered encoder in test_models_registry.py.)"""

from __future__ import annotations

import pytest
import torch

from mmcli.encoders import ENCODERS, ModalitySpec

SPEC = ModalitySpec("clip", "video", image_size=32)


@pytest.mark.parametrize("arch, first", [("s3d", lambda tv: tv.features[0][0][0].weight),
                                         ("swin3d_t", lambda tv: tv.patch_embed.proj.weight),
                                         ("mvit_v1_b", lambda tv: tv.conv_proj.weight)])
def test_a_weights_file_loads_into_the_network(arch, first, tmp_path):
    import torchvision.models.video as tvv

    source = getattr(tvv, arch)(weights=None)
    torch.save(source.state_dict(), tmp_path / f"{arch}.pth")
    encoder = ENCODERS.get(f"video.{arch}")(SPEC, 16, weights=str(tmp_path / f"{arch}.pth"))
    loaded = dict(encoder.named_parameters())
    assert any(torch.equal(p, first(source)) for p in loaded.values()) and encoder.trained_parts == ("body.",)
    encoder.eval()
    out = encoder(torch.randn(2, 6, 3, 32, 32))
    assert out.pooled.shape == (2, 16) and torch.isfinite(out.tokens).all()


def test_s3d_lengthens_a_short_clip_with_its_last_frame():
    encoder = ENCODERS.get("video.s3d")(SPEC, 8).eval()
    clip = torch.randn(2, 3, 3, 32, 32)
    lengthened = torch.cat([clip, clip[:, -1:].expand(-1, 2, -1, -1, -1)], dim=1)  # 5 frames, S3D's least
    with torch.no_grad():
        assert torch.equal(encoder.features(clip)[0], encoder.features(lengthened)[0])


def test_mvit_reads_its_position_embeddings_as_learnt_at_their_size_and_interpolated_at_others():
    import torchvision.models.video as tvv

    tv = tvv.mvit_v1_b(weights=None)
    torch.nn.init.normal_(tv.pos_encoding.temporal_pos)
    torch.nn.init.normal_(tv.pos_encoding.spatial_pos)
    from mmcli.encoders.video_backbones import _MViTBody

    body = _MViTBody(tv)
    t, (h, w) = tv.pos_encoding.temporal_size, tv.pos_encoding.spatial_size  # 8 x 56 x 56 for 16 x 224 x 224
    native = torch.repeat_interleave(tv.pos_encoding.temporal_pos, h * w, dim=0) + tv.pos_encoding.spatial_pos.repeat(t, 1)
    assert torch.equal(body._position((t, h, w)), native)
    with torch.no_grad():  # a constant over space and a ramp over time read the same at another grid
        tv.pos_encoding.spatial_pos.copy_(torch.randn(native.shape[1]).expand(h * w, -1))
        tv.pos_encoding.temporal_pos.copy_(torch.arange(t, dtype=torch.float)[:, None].expand(-1, native.shape[1]))
        small = body._position((2, 8, 8)).view(2, 64, -1) - tv.pos_encoding.spatial_pos[0]
    assert torch.allclose(small[:, 1:], small[:, :1], atol=1e-5)  # the same over space
    assert 0 <= small[0, 0, 0] < small[1, 0, 0] <= t - 1  # later steps, later positions, within the learnt span


@pytest.mark.parametrize("arch, size", [("s3d", 224), ("swin3d_t", 224), ("mvit_v1_b", 224), ("r3d_18", 112)])
def test_each_network_asks_for_its_weights_frame_size_and_normalisation(arch, size):
    from torchvision.models import get_model_weights

    from mmcli.config import from_dict
    from mmcli.models import wanted_preprocessing

    config = from_dict({"model": {"encoders": {"clip": arch}, "encoder_options": {"clip": {"weights": "w.pth"}}}})
    wanted = wanted_preprocessing(config, {"clip": "video"})
    assert wanted["image_size"] == size
    assert wanted["image_mean"] == list(get_model_weights(arch).DEFAULT.transforms().mean)
