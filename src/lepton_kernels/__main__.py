"""``python -m lepton_kernels`` == the ``lepton-kernels`` command."""
from .cli import main

raise SystemExit(main())
