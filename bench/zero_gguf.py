"""Writes a copy of a GGUF model with every tensor replaced by zeros in F32 or F16, keeping its
metadata (architecture, tokenizer). For speed comparisons on machines a real model cannot reach:
the file compresses to about a megabyte, and a GPU's matrix kernels take the same time on zeros.
Never use its outputs for anything but timing.

    /opt/pyref/bin/python bench/zero_gguf.py models/SmolLM2-135M-Instruct.Q4_1.gguf out.gguf f32
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType


def main(src: str, dst: str, dtype: str) -> None:
    np_type = {"f32": np.float32, "f16": np.float16}[dtype]
    file_type = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16}[dtype]
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(dst, arch)
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(name, field.contents(), vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(name, field.contents(), vtype)
    w.add_file_type(file_type)
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists ne0 first
        # Norm weights stay F32, as llama.cpp's converter writes them.
        kind = np.float32 if len(shape) == 1 else np_type
        w.add_tensor(t.name, np.zeros(shape, dtype=kind))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
