"""`python -m lgfn.ops`: build the C++ deformable-conv kernels now (make install does)."""

from lgfn.ops.cpu_kernels import main

raise SystemExit(main())
