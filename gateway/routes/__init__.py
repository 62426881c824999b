"""HTTP routes, one module per resource. Routes parse, call one service, commit, render."""
