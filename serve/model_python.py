"""LCoAN through ONNX Runtime (CPU) in Triton's Python backend: the model of ``configs/cpu.pbtxt``.

Copied into the model repository as ``1/model.py`` and run by ``triton_python_backend_stub``
with the packages of the ``python`` first on ``PATH`` (onnxruntime, numpy < 2: the stub of
Triton 2.51 fails every request under numpy 2). It is never imported by the project itself.

Any graph I/O of ``export.to_onnx --io``: ``float`` (``lr`` -> ``sr``), ``rgb8`` (uint8 ``lr`` ->
``sr``) and ``i420`` (uint8 ``y``, ``u``, ``v`` -> ``y_sr``, ``u_sr``, ``v_sr``). Inputs and outputs
are matched by name between the config and the graph; each input is fed in the graph's own type.

The dynamic batcher hands ``execute`` several requests at once; the Python backend leaves
batching to the model, so requests of equal shapes (the batcher only groups those) are
concatenated into one ONNX Runtime call and split again.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# ONNX Runtime's type strings -> numpy
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
              "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        # args["model_repository"] is this model's folder; the graph sits beside model.py.
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        options = ort.SessionOptions()
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        graph_inputs = {i.name: i.type for i in self.session.get_inputs()}
        graph_outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = [c["name"] for c in config["input"]]
        self.outputs = [c["name"] for c in config["output"]]
        missing = [n for n in self.inputs if n not in graph_inputs] + [n for n in self.outputs if n not in graph_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{path}: the config names {missing}, which the graph does not have "
                f"(graph: {list(graph_inputs)} -> {graph_outputs})")
        self.dtypes = {n: _ORT_TYPES.get(graph_inputs[n], np.float32) for n in self.inputs}

    def _read(self, request):
        """The request's inputs as the graph's types, or an error message."""
        arrays = {}
        for name in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                return None, f"input '{name}' is missing"
            x = tensor.as_numpy()
            want = self.dtypes[name]
            if np.issubdtype(want, np.floating):
                if not np.isfinite(x).all():
                    return None, f"input '{name}' contains NaN or Inf"
            elif x.dtype != want:  # integer graphs take their own type only: no silent wrap-around
                return None, f"input '{name}' is {x.dtype}, the graph takes {np.dtype(want).name}"
            arrays[name] = np.ascontiguousarray(x, dtype=want)
        return arrays, None

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for i, request in enumerate(requests):
            arrays, error = self._read(request)
            if error:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(error))
                continue
            key = tuple(arrays[n].shape[1:] for n in self.inputs)
            groups.setdefault(key, []).append((i, arrays))
        for items in groups.values():
            feed = {n: (np.concatenate([a[n] for _, a in items]) if len(items) > 1 else items[0][1][n])
                    for n in self.inputs}
            results = self.session.run(self.outputs, feed)
            start = 0
            for i, arrays in items:
                count = arrays[self.inputs[0]].shape[0]
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(y[start:start + count]))
                           for n, y in zip(self.outputs, results)]
                start += count
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def finalize(self):
        self.session = None
