"""Serving LCoAN on NVIDIA Triton Inference Server.

``serve.repository``    writes a Triton model repository (TensorRT plan + production config, ONNX
                        Runtime CPU config in the Python backend, plugin library, README).
``serve.server``        starts and stops the ``tritonserver`` bundled in ``nvidia-pytriton``
                        (Python backend only) on loopback: tests, the load benchmark, local trials.
``serve.model_python``  the Python-backend model (copied into the repository as ``1/model.py``;
                        runs inside Triton's stub, never imported here).

Imports ``export`` and ``engine`` (to build the graph and the engine); nothing here imports ``app`` or
``pipeline``. The Triton client is ``app.backends.triton``; the command ``pipeline.to_triton``.
"""
