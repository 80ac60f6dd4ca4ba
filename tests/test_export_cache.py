import numpy as np
import pytest
import torch
from torch import nn

from edgestylegan.errors import UserError
from edgestylegan.runtimes import export_cache


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.norm(self.conv(x)).mean(dim=(2, 3))


def test_export_is_cached_by_content_and_compiles_to_the_module(tmp_path, monkeypatch):
    monkeypatch.setenv(export_cache.CACHE_ENV, str(tmp_path))
    torch.manual_seed(0)
    module, example = _Tiny().eval(), (torch.zeros(2, 3, 16, 16),)
    first = export_cache.cached_onnx(module, example)
    assert first.parent == tmp_path / "onnx" and first.is_file()

    exports = []
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: exports.append(a))
    assert export_cache.cached_onnx(module, example) == first and exports == []   # read back, not re-exported
    monkeypatch.undo()
    monkeypatch.setenv(export_cache.CACHE_ENV, str(tmp_path))

    other_shape = export_cache.cached_onnx(module, (torch.zeros(4, 3, 16, 16),))
    with torch.no_grad():
        module.conv.weight[0, 0, 0, 0] += 1e-3
    other_weights = export_cache.cached_onnx(module, example)
    module.norm.running_mean += 1.0                     # buffers count too
    other_buffer = export_cache.cached_onnx(module, example)
    assert len({first, other_shape, other_weights, other_buffer}) == 4

    x = torch.rand(2, 3, 16, 16)
    compiled = export_cache.openvino_module(module, (x,))
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x.numpy())[0], module(x).numpy(), atol=1e-5)


def test_a_damaged_cache_entry_or_an_unwritable_cache_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(export_cache.CACHE_ENV, str(tmp_path))
    module, example = _Tiny().eval(), (torch.zeros(1, 3, 8, 8),)
    path = export_cache.cached_onnx(module, example)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match=f"{path}.*delete it"):
        export_cache.openvino_module(module, example)

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(export_cache.CACHE_ENV, str(blocker))      # a file where the cache folder should be
    with pytest.raises(UserError, match=export_cache.CACHE_ENV):
        export_cache.cached_onnx(module, example)
