"""`python -m trm_train` (what `torchrun -m trm_train` runs): the `trm-train` command."""

from trm_train.training._cli import main

main()
