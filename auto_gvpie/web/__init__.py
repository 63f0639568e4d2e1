"""See what the worker did: a local web dashboard (`--serve`) and a static morning report (`--report`).

`views` reads the home (state store, attempt files, artifacts, memory) without changing it;
`charts` draws history as SVG on the server; `render` holds the Jinja2 templates both share;
`app` is the Starlette app with its safety checks; `report` writes the one-file HTML report.
Actions (add, cancel) go through `auto_gvpie.actions`, the same code as the command line.
"""
