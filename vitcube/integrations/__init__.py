"""Training frameworks on the SDK (`vitcube.trial`): thin callbacks that report every validation,
save and resume checkpoints through the worker, and honour `should_stop`.

- `vitcube.integrations.lightning.VitcubeCallback`: PyTorch Lightning (`pip install
  'vitcube[lightning]'`);
- `vitcube.integrations.transformers.VitcubeCallback`: Hugging Face `transformers.Trainer`
  (`pip install 'vitcube[transformers]'`).

Importing this package imports neither framework: each module imports its own.
"""

from __future__ import annotations

from vitcube.trial import Trial


def as_search_metric(
    metrics: dict[str, float], key: str, trial: Trial, *, missing: str
) -> dict[str, float]:
    """`metrics` with the value logged under `key` renamed to the search's metric.

    ValueError when nothing was logged under `key`: `missing` says, in the framework's words,
    what was looked at and how to log it ("epoch 3: Lightning logged no 'acc': log it in
    validation"); the rest of the message names the search's metric and what was logged."""
    name = trial.metric.name
    if key not in metrics:
        keys = ", ".join(sorted(metrics)) or "nothing"
        raise ValueError(
            f"{missing}, or pass VitcubeCallback(metric=KEY) naming the key that holds it: "
            f"the search optimises {name} ({trial.metric.goal}) (logged: {keys})"
        )
    if key != name:
        metrics[name] = metrics.pop(key)
    return metrics
