"""The synthray Ray Serve application: FastAPI ingress, batched encoder, index owner.

Run from the repository root::

    serve run serve.app:build_app checkpoint=runs/demo/train/supcon-cpu
    serve run serve/config.yaml        # or: serve deploy serve/config.yaml
    synthray serve --checkpoint ...    # local cluster, blocks

This package is named ``serve`` at the top level of the repository (the deployment
``import_path`` is ``serve.app:build_app``); Ray's own package is ``ray.serve``, so the
two never collide. Importing it loads nothing heavy: each module imports Ray, torch or
Qdrant only where it needs them.
"""
