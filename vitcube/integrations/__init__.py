"""Training frameworks on the SDK (`vitcube.trial`): thin callbacks that report every validation,
save and resume checkpoints through the worker, and honour `should_stop`.

- `vitcube.integrations.lightning.VitcubeCallback`: PyTorch Lightning (`pip install
  'vitcube[lightning]'`);
- `vitcube.integrations.transformers.VitcubeCallback`: Hugging Face `transformers.Trainer`
  (`pip install 'vitcube[transformers]'`).

Importing this package imports neither framework: each module imports its own.
"""
