"""The ``volnet`` command line: one module per subcommand, dispatched by :mod:`volnet.cli.main`."""
