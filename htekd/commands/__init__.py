"""One module per `htekd` command: add_arguments(parser, name) and run(args) -> exit status; see htekd.cli."""
