"""fm-run: the command group, its options, sample and inspect commands, the supervisor that makes
every run stoppable, output files, the memory budget, PNG and plots."""
