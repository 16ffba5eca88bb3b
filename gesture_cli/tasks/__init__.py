"""Task cores: one module per task, each holding every function that opens a run-dir step for it
(train, evaluate, infer, render) and the artifact save/load those steps share.

The command line (`gesture_cli.cli`) reaches the rest of the package only through here and `core`.
Modules import their heavy dependencies lazily, so importing one costs nothing until it runs.
"""
