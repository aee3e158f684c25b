"""Data shipped with mixacc, bit-identical on every machine: each named dataset is an
``.npz`` of its splits (``x_train``, ``y_train``, ``x_test``, ``y_test``) whose arrays'
sha256 are recorded in ``index.json``; :func:`emulator.data.load_data` checks them on
every load. ``python -m emulator.datasets.build NAME`` regenerates a file from its
source (a generator whose floating-point results may differ between CPUs: the shipped
file, not the generator, is the data)."""
