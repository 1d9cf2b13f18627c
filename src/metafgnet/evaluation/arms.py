"""The arms the pipeline compares, in the order every table lists them.

- ``finetune``: the source-pretrained network fine-tuned (the standard baseline);
- ``joint``: target + auxiliary cross-entropy from the pretrained network, no meta-learning;
- ``metafgnet``: meta-trained on all auxiliary data, then fine-tuned;
- ``metafgnet_selected``: meta-trained again on the selected auxiliary data, then fine-tuned;
- ``metafgnet_random``: the control for selection: meta-trained again, with the same scaled
  schedule, on a random auxiliary subset of the selected one's size
  (:mod:`metafgnet.selection.subsets`), then fine-tuned.

``dvc.yaml`` names the same arms in its ``vars`` (a pipeline test holds the two equal).
"""

ARMS = ("finetune", "joint", "metafgnet", "metafgnet_selected", "metafgnet_random")
ARM_METRICS = ("val_top1", "test_top1", "test_mean_class_acc")
