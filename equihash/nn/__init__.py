"""Networks mapping mosaic instances to k logits (docs/method.md section 5), one module each
(``mnist``, ``resnet``, ``perceptual``); the task registry (``equihash.tasks``) names each
task's network. Nothing is imported here, so that ``equihash.nn.precision`` and
``equihash.nn.cpu`` load without torch."""
