"""One module per command: HELP, DESCRIPTION, add_arguments(parser), run(args, env)."""
