"""One module per `htekd` command: HELP, add_arguments(parser, name), run(args) -> exit status."""
