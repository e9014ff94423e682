"""Tiled inference equals whole-image inference for a purely convolutional model.

LCoAN itself has non-local attention, so its tiled output is only close to whole-image output;
exact equality is proved here with a randomly initialised conv stack + pixel shuffle whose
receptive-field radius (3 LR px) is covered by the overlap.
"""
import pytest
import torch
from torch import nn

from lcoan import errors
from lcoan.tiling import MemoryEstimateError, check_memory, tile_spans, tiled_forward


def conv_sr(scale: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale),
    )
    return net.eval()


@pytest.mark.parametrize("scale,shape,tile,overlap", [
    (2, (1, 3, 37, 29), 10, 3),   # non-divisible sizes, overlap == receptive radius
    (3, (2, 3, 24, 24), 8, 5),    # divisible sizes, batch of 2
    (4, (1, 3, 17, 40), 16, 4),   # tile larger than the height only
    (2, (1, 3, 20, 20), 64, 4),   # tile larger than the image
    pytest.param(2, (1, 3, 9, 11), 1, 3, marks=pytest.mark.slow),  # 1-px cores: 99 tiles
])
def test_tiled_equals_whole_for_conv_model(scale, shape, tile, overlap):
    net = conv_sr(scale)
    lr = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net(lr)
        tiled = tiled_forward(net, lr, scale, tile=tile, overlap=overlap)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() <= 1e-5


def test_too_little_overlap_shows_seams():
    net = conv_sr(2)
    lr = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        err = (tiled_forward(net, lr, 2, tile=8, overlap=0) - net(lr)).abs().max().item()
    assert err > 1e-3  # the equality test above is sensitive to the overlap


def test_tile_none_and_output_device():
    net = conv_sr(2)
    lr = torch.rand((1, 3, 12, 12))
    with torch.no_grad():
        assert torch.equal(tiled_forward(net, lr, 2, tile=None), net(lr))
        out = tiled_forward(net, lr, 2, tile=5, overlap=3, out_device=torch.device("cpu"))
    assert out.device.type == "cpu" and out.shape == (1, 3, 24, 24)


@pytest.mark.parametrize("size,tile,overlap", [(37, 10, 3), (10, 10, 2), (5, 8, 4), (100, 7, 0)])
def test_tile_spans_cover_and_contain(size, tile, overlap):
    spans = tile_spans(size, tile, overlap)
    covered = []
    windows = set()
    for cs, ce, ws, we in spans:
        covered.extend(range(cs, ce))
        assert 0 <= ws <= cs < ce <= we <= size
        # full context available unless clipped by the image border
        assert cs - ws >= min(overlap, cs) and we - ce >= min(overlap, size - ce)
        windows.add(we - ws)
    assert covered == list(range(size))
    assert len(windows) == 1  # all windows have the same size


def test_wrong_output_size_rejected():
    with pytest.raises(ValueError):
        tiled_forward(lambda x: x, torch.rand(1, 3, 20, 20), 2, tile=8, overlap=2)


def test_memory_estimate_error_is_one_cli_line(monkeypatch, capsys):
    """Every CLI shows it as one line and status 2; callers that catch MemoryError still do."""
    monkeypatch.setenv("LCOAN_MAX_MEMORY_MB", "1")
    with pytest.raises(MemoryError):
        check_memory(2000, 3000, scale=2, n_feats=64, tile=None, overlap=32, name="big.png")

    def main(argv):
        check_memory(2000, 3000, scale=2, n_feats=64, tile=None, overlap=32, name="big.png")
    assert errors.exit_status(main, []) == errors.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: big.png: 3000x2000 needs about") and "--tile" in err and err.count("\n") == 1
    assert issubclass(MemoryEstimateError, errors.LcoanError)
