"""Sub-commands of the ``detdemo`` command line, one module each."""
