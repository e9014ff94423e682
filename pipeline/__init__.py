"""Commands that chain the stages (``export`` -> ``calib`` -> ``engine``, and Triton's repository in
``serve``): the one place above the stages that may import all of them. No stage imports it.

    python -m export.to_trt --int8 --calib DIR     # pipeline.to_trt: export, calibrate, build
    python -m export.to_triton --out DIR           # pipeline.to_triton: engine + Triton repository
"""
