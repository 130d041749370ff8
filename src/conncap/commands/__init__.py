"""Command modules: each has HELP, add_arguments(parser) and run(args) -> int."""
