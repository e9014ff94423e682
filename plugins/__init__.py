"""Native parts of the LCoA edge pipeline: CUDA kernels and TensorRT plugins.

* ``plugins/cluster_sort/`` - the ``lcoan::LCoAClusterSort`` TensorRT plugin (IPluginV3) and its CUDA kernels.
* :mod:`plugins.build` - CMake build helper (``python -m plugins.build``).
* :mod:`plugins.loader` - ctypes harness for the kernels and TensorRT plugin-library loading.

Data flows one way, lcoan -> export -> plugins: this package may import ``export`` and ``lcoan``, never the
reverse.
"""
