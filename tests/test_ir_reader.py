import numpy as np
import pytest
import torch

from edgestylegan.io.ir_reader import (NOISE_PORTS, IRFormatError, load_random_face_generator, random_face_data_dir,
                                       read_ir_constants)

UPSTREAM_PARAMS = 8_852_079   # MobileStyleGAN's published synthesis parameter count (all frequency heads)


def _write_ir(tmp_path, name, shape, values):
    xml = f"""<?xml version="1.0"?>
<net name="tiny" version="11"><layers>
<layer id="0" name="{name}_layer" type="Const" version="opset1">
  <data element_type="f32" shape="{','.join(map(str, shape))}" offset="0" size="{values.nbytes}"/>
  <output><port id="0" precision="FP32" names="{name}"><dim>1</dim></port></output>
</layer></layers><edges/></net>"""
    (tmp_path / "Net.xml").write_text(xml)
    values.astype(np.float32).tofile(tmp_path / "Net.bin")
    return tmp_path / "Net.xml"


def test_reads_consts_by_port_name(tmp_path):
    values = np.arange(6, dtype=np.float32)
    consts = read_ir_constants(_write_ir(tmp_path, "m.x.weight", (2, 3), values))
    assert consts["m.x.weight"].shape == (2, 3)
    assert np.array_equal(consts["m.x.weight"].ravel(), values)


def test_truncated_bin_fails_loudly(tmp_path):
    xml = _write_ir(tmp_path, "w", (4, 4), np.zeros(16, np.float32))
    (tmp_path / "Net.bin").write_bytes(b"\0" * 10)
    with pytest.raises(IRFormatError, match="truncated"):
        read_ir_constants(xml)


def test_missing_files_fail_loudly(tmp_path):
    with pytest.raises(IRFormatError, match="cannot parse"):
        read_ir_constants(tmp_path / "Missing.xml")


def test_shape_mismatch_names_the_constant(tmp_path, monkeypatch):
    import edgestylegan.io.ir_reader as ir

    real = ir.read_ir_constants

    def corrupt(path):
        consts = dict(real(path))
        if "m.conv1.conv.weight" in consts:
            consts["m.conv1.conv.weight"] = np.zeros((512, 512, 3, 2), np.float32)
        return consts

    monkeypatch.setattr(ir, "read_ir_constants", corrupt)
    with pytest.raises(IRFormatError, match="m.conv1.conv.weight"):
        load_random_face_generator()


def test_real_ir_fills_the_teacher():
    consts = read_ir_constants(random_face_data_dir() / "SynthesisNetwork.xml")
    assert consts["m.layers.0.conv1.conv.weight_permute"].shape == (512, 128, 1, 1)
    gen = load_random_face_generator()
    # Every synthesis parameter comes from the IR: its PyTorch-named constants ("m.*"), plus one noise strength per
    # folded noise constant (the unit-std map is a buffer).
    from_ir = sum(int(np.prod(a.shape)) for name, a in consts.items() if name.startswith("m.")) + len(NOISE_PORTS)
    assert sum(p.numel() for p in gen.synthesis.parameters()) == from_ir
    assert sum(p.numel() for p in gen.mapping.parameters()) == 8 * (512 * 512 + 512)
    noise = gen.synthesis.blocks[4].conv1.noise   # strength x map reproduces the IR's folded constant
    folded = consts[NOISE_PORTS["blocks.4.conv1"]].reshape(noise.noise_map.shape)
    np.testing.assert_allclose((noise.noise_strength * noise.noise_map).detach().numpy(), folded, rtol=1e-5, atol=1e-7)


def test_all_heads_model_has_the_upstream_parameter_count():
    from edgestylegan.models.mobilestylegan import Generator, GeneratorConfig

    gen = Generator(GeneratorConfig(all_heads=True))
    assert sum(p.numel() for p in gen.synthesis.parameters()) == UPSTREAM_PARAMS


def test_parity_with_openvino_on_one_latent():
    from edgestylegan.runtimes.openvino_ir import OpenVINOGenerator
    from edgestylegan.models.mobilestylegan import latents_from_seeds

    gen = load_random_face_generator()
    runtime = OpenVINOGenerator(precision="f32")
    z = latents_from_seeds([3])
    with torch.no_grad():
        w = gen.style(z)
        ours = gen.synthesis(w).numpy()
    assert np.abs(runtime.style(z.numpy()) - w.numpy()).max() < 1e-5
    assert np.abs(runtime.synthesize(w.numpy()) - ours).max() < 2e-4
