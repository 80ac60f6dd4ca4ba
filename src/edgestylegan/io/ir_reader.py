"""Read OpenVINO IR (v10/v11) constants with ElementTree + numpy, and fill our MobileStyleGAN from them.

No OpenVINO runtime is needed to load. Constants are addressed by their output-port `names`, which keep the
PyTorch names even where the converter renamed the layer (spec section 2.2). Every target tensor is shape
checked; a missing or mis-shaped constant raises `IRFormatError` naming it.
"""
from __future__ import annotations

import importlib.util
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch

from ..errors import IRFormatError
from ..models.mobilestylegan import Generator, GeneratorConfig

_DTYPES = {"f32": np.float32, "f16": np.float16, "i64": np.int64, "i32": np.int32, "u8": np.uint8}
MAPPING_LR_MUL = 0.01

# Mapping net constants by port name (spec 2.1): (weight, bias) of linear layers 1..8.
MAPPING_PORTS = [(str(173 + 4 * k), str(174 + 4 * k)) for k in range(8)]
# Folded noise constants (noise weight x frozen map) by port name, in synthesis order (spec 2.2).
NOISE_PORTS = {
    "conv1": "1531",
    **{f"blocks.{i}.conv{j + 1}": name for i, pair in enumerate(
        [("1560", "1572"), ("1601", "1613"), ("1642", "1654"), ("1683", "1695"),
         ("1724", "1736"), ("1765", "1777"), ("1806", "1818")]) for j, name in enumerate(pair)},
}


def random_face_data_dir() -> Path:
    spec = importlib.util.find_spec("random_face")
    if spec is None or not spec.submodule_search_locations:
        raise IRFormatError(
            "the `random-face` wheel is not installed; install it with "
            "`pip install --no-deps random-face==2021.7.21.1` (see requirements-nodeps.txt)"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    for stem in ("MappingNetwork", "SynthesisNetwork"):
        for ext in (".xml", ".bin"):
            if not (data / f"{stem}{ext}").is_file():
                raise IRFormatError(f"random-face wheel is incomplete: {data / (stem + ext)} is missing")
    return data


def read_ir_constants(xml_path: Path) -> dict[str, np.ndarray]:
    """All Const layers of an IR, keyed by every name their output port carries (and by layer name)."""
    xml_path = Path(xml_path)
    bin_path = xml_path.with_suffix(".bin")
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise IRFormatError(f"cannot parse IR XML {xml_path}: {e}") from e
    if not bin_path.is_file():
        raise IRFormatError(f"IR weights file {bin_path} is missing")
    blob = np.fromfile(bin_path, dtype=np.uint8)
    constants: dict[str, np.ndarray] = {}
    for layer in root.iter("layer"):
        if layer.get("type") != "Const":
            continue
        data = layer.find("data")
        etype = data.get("element_type")
        if etype not in _DTYPES:
            raise IRFormatError(f"{xml_path}: Const {layer.get('name')} has unsupported element_type {etype}")
        shape = [int(s) for s in data.get("shape").split(",") if s != ""]
        offset, size = int(data.get("offset")), int(data.get("size"))
        if offset + size > blob.size:
            raise IRFormatError(f"{bin_path} is truncated: Const {layer.get('name')} needs bytes up to {offset + size}")
        array = blob[offset:offset + size].view(_DTYPES[etype]).reshape(shape)
        names = {layer.get("name")}
        port = layer.find("output/port")
        if port is not None and port.get("names"):
            names.update(n.strip() for n in port.get("names").split(","))
        for name in names:
            constants[name] = array
    return constants


def _take(constants: dict[str, np.ndarray], name: str, shape: tuple[int, ...], source: str) -> torch.Tensor:
    if name not in constants:
        raise IRFormatError(f"{source}: constant {name!r} not found")
    array = constants[name]
    if int(np.prod(array.shape)) != int(np.prod(shape)):
        raise IRFormatError(f"{source}: constant {name!r} has shape {tuple(array.shape)}, expected {shape}")
    return torch.from_numpy(np.array(array, dtype=np.float32).reshape(shape))


def _set(param: torch.Tensor, value: torch.Tensor, target: str) -> None:
    if param.shape != value.shape:
        raise IRFormatError(f"shape mismatch for {target}: model {tuple(param.shape)}, IR {tuple(value.shape)}")
    param.copy_(value)


@torch.no_grad()
def load_random_face_generator(data_dir: Path | None = None) -> Generator:
    """Build the 1024-px MobileStyleGAN generator and fill every weight from the random-face IR."""
    data_dir = Path(data_dir) if data_dir else random_face_data_dir()
    mapping_xml, synthesis_xml = data_dir / "MappingNetwork.xml", data_dir / "SynthesisNetwork.xml"
    gen = Generator(GeneratorConfig())
    dim = gen.config.style_dim

    consts = read_ir_constants(mapping_xml)
    for layer, (w_name, b_name) in zip(gen.mapping.layers, MAPPING_PORTS):
        _set(layer.weight, _take(consts, w_name, (dim, dim), str(mapping_xml)), f"mapping {w_name}")
        _set(layer.bias, _take(consts, b_name, (dim,), str(mapping_xml)), f"mapping {b_name}")

    consts = read_ir_constants(synthesis_xml)
    src = str(synthesis_xml)
    syn = gen.synthesis

    def load_linear(linear, prefix):
        out_features = linear.weight.shape[0]
        _set(linear.weight, _take(consts, f"{prefix}.weight", (out_features, dim), src), prefix)
        _set(linear.bias, _take(consts, f"{prefix}.bias", (out_features,), src), prefix)

    def load_noise(noise, key, size):
        folded = _take(consts, NOISE_PORTS[key], (1, 1, size, size), src).double()
        strength = folded.std()
        noise.noise_strength.fill_(strength.item())
        noise.noise_map.copy_((folded / strength).float())

    _set(syn.const, _take(consts, "m.input.input", tuple(syn.const.shape), src), "const")
    load_linear(syn.conv1.conv.modulation, "m.conv1.conv.modulation")
    _set(syn.conv1.conv.conv.weight, _take(consts, "m.conv1.conv.weight", tuple(syn.conv1.conv.conv.weight.shape), src), "conv1")
    _set(syn.conv1.conv.conv.bias, _take(consts, "m.conv1.bias", tuple(syn.conv1.conv.conv.bias.shape), src), "conv1 bias")
    load_noise(syn.conv1.noise, "conv1", 4)

    for i, block in enumerate(syn.blocks):
        p = f"m.layers.{i}"
        size = 2 ** (i + 3)
        load_linear(block.up.modulation, f"{p}.up.modulation")
        for j, styled in ((1, block.conv1), (2, block.conv2)):
            conv = styled.conv
            load_linear(conv.modulation, f"{p}.conv{j}.conv.modulation")
            _set(conv.depthwise.weight, _take(consts, f"{p}.conv{j}.conv.weight_dw", tuple(conv.depthwise.weight.shape), src), f"{p}.conv{j} dw")
            _set(conv.pointwise.weight, _take(consts, f"{p}.conv{j}.conv.weight_permute", tuple(conv.pointwise.weight.shape), src), f"{p}.conv{j} pw")
            _set(conv.pointwise.bias, _take(consts, f"{p}.conv{j}.bias", tuple(conv.pointwise.bias.shape), src), f"{p}.conv{j} bias")
            load_noise(styled.noise, f"blocks.{i}.conv{j}", size)
    head = syn.blocks[-1].to_img.conv
    p = f"m.layers.{len(syn.blocks) - 1}.to_img"
    load_linear(head.modulation, f"{p}.conv.modulation")
    _set(head.conv.weight, _take(consts, f"{p}.conv.weight", tuple(head.conv.weight.shape), src), f"{p} weight")
    _set(head.conv.bias, _take(consts, f"{p}.bias", tuple(head.conv.bias.shape), src), f"{p} bias")
    _check_scales(syn)
    return gen


def _check_scales(syn) -> None:
    """The IR's modulation scale constants equal 1/sqrt(cin*k^2); our modules compute the same."""
    expected = 1 / math.sqrt(512 * 9)
    if not math.isclose(syn.conv1.conv.scale, expected, rel_tol=1e-6):
        raise IRFormatError(f"conv1 modulation scale {syn.conv1.conv.scale} != {expected}")
