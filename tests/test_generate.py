import pytest
from PIL import Image

from edgestylegan.errors import UserError
from edgestylegan.generate import main, parse_seeds
from edgestylegan.io.checkpoint import save_generator


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(UserError):
        parse_seeds("3-1")


def test_generate_writes_one_png_per_seed(tmp_path, tiny_generator):
    save_generator(tiny_generator, tmp_path / "g.safetensors")
    main(["--model", str(tmp_path / "g.safetensors"), "--seeds", "0-2", "--out", str(tmp_path / "out"),
          "--truncation", "0.7"])
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["seed0000.png", "seed0001.png", "seed0002.png"]
    assert Image.open(tmp_path / "out" / "seed0001.png").size == (32, 32)
