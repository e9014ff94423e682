"""LCoAN through ONNX Runtime (CPU) in Triton's Python backend: the model of ``configs/cpu.pbtxt``.

Copied into the model repository as ``1/model.py`` and run by ``triton_python_backend_stub``
with the packages of the ``python`` first on ``PATH`` (onnxruntime, numpy < 2: the stub of
Triton 2.51 fails every request under numpy 2). It is never imported by the project itself.

The dynamic batcher hands ``execute`` several requests at once; the Python backend leaves
batching to the model, so requests of equal shape (the batcher only groups those) are
concatenated into one ONNX Runtime call and split again.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


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
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.graph_input = self.session.get_inputs()[0].name

    def execute(self, requests):
        arrays, responses = [], [None] * len(requests)
        for i, request in enumerate(requests):
            x = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
            if not np.isfinite(x).all():
                responses[i] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"input '{self.input_name}' contains NaN or Inf"))
                continue
            arrays.append((i, x))
        groups = {}
        for i, x in arrays:
            groups.setdefault(x.shape[1:], []).append((i, x))
        for items in groups.values():
            batch = np.concatenate([x for _, x in items]) if len(items) > 1 else items[0][1]
            y = self.session.run(None, {self.graph_input: np.ascontiguousarray(batch, dtype=np.float32)})[0]
            start = 0
            for i, x in items:
                part = np.ascontiguousarray(y[start:start + x.shape[0]])
                start += x.shape[0]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)])
        return responses

    def finalize(self):
        self.session = None
