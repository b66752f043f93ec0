"""llama.cpp control vectors: a vector intervention as a GGUF file, and the file read back the
way llama.cpp's own loader reads it.

Where the numbering meets: our vector form adds `m·v` to the output of decoder block `layer`
(a forward hook on that block, after its MLP's residual add). llama.cpp adds `direction.N` to
the output of block N, after the same residual add (`build_cvec(cur, il)` at the end of each
block), and its loader rejects N = 0. So `direction.<layer>` is our vector, layer 0 cannot be
expressed, and EasySteer (vLLM), which reads `direction.N` as 0-based decoder layer N and adds
it to that layer's full output, reads the same file the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steerfront.errors import SteerfrontError


def write_control_vector(path: Path, vector: np.ndarray, layer: int, model_hint: str) -> None:
    """Write `vector` (kept at m = 1: the engines take m as their scale) as `direction.<layer>`.

    The metadata is what llama.cpp's own generator writes (its loader reads none of it):
    the model's type and the number of directions in the file.
    """
    import gguf

    if layer < 1:
        raise SteerfrontError(
            f"layer {layer}: llama.cpp adds direction.N after block N and rejects N = 0"
        )
    writer = gguf.GGUFWriter(str(path), arch="controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", 1)
    writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(vector, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def control_vector_data(path: str | Path, scale: float = 1.0) -> tuple[int, np.ndarray]:
    """The width and the buffer llama.cpp hands to `llama_set_adapter_cvec` for this file at
    this scale, built as its `common_control_vector_load_one` builds it: every 1-D F32
    `direction.N` (N >= 1) times `scale`, summed into rows laid out from layer 1
    (`direction.N` at row N - 1). Anything that loader refuses is refused here, in one line.
    """
    import gguf

    reader = gguf.GGUFReader(str(path))
    width, rows = -1, np.zeros(0, dtype=np.float32)
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        layer = int(index) if prefix == "direction" and index.isdigit() else -1
        if layer < 1:
            raise SteerfrontError(f"{path}: tensor {tensor.name!r} is not direction.N with N >= 1")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise SteerfrontError(f"{path}: {tensor.name} is not a 1-D F32 tensor")
        if width not in (-1, int(tensor.n_elements)):
            raise SteerfrontError(f"{path}: {tensor.name} is not {width} wide like the others")
        width = int(tensor.n_elements)
        if rows.size < width * layer:
            rows = np.concatenate([rows, np.zeros(width * layer - rows.size, dtype=np.float32)])
        rows[width * (layer - 1) : width * layer] += np.asarray(tensor.data, np.float32) * scale
    if width == -1:
        raise SteerfrontError(f"{path}: no direction tensors")
    return width, rows
