"""vitcube's GPU worker: lease trials over HTTP, train MobileViT variants, report results.

`workers.cli` (the `vitcube worker` command), `workers.loop` (lease → executor → report, with
the heartbeat, checkpoints and the spool around it), `workers.executors` (what trains a segment:
builtin, surrogate, command), `workers.faults` (how a failure is reported), `workers.client`
(the REST client), `workers.spool` (results on disk until acknowledged), `workers.runner` /
`workers.training` / `workers.recipe` / `workers.evaluate` / `workers.latency` /
`workers.augment` / `workers.batches` (the MobileViT training recipe), `workers.datasets`
(digits, CIFAR, image folders), `workers.decode_cache` (image folders decoded once per host),
`workers.progress` (what a person sees), `workers.surrogate` (the synthetic landscape). A GPU
box needs nothing of the server (an import contract in pyproject.toml checks); importing this
package imports nothing.
"""
