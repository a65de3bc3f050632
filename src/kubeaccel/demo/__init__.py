"""``kubeaccel demo``: the README's main job on embedded defaults, both halves together.

Orchestrates both halves from above (the only package besides the CLI allowed to): a local cluster with a
real node, the node side deployed with its Helm chart on simulated ``nec.com/ve`` devices, and the example
Spark app whose tasks report the devices they received.

- ``common``: options, results, images, Helm, the cluster and the app as named steps shared by both modes
  (`Session`, `run_steps` and its clean-up);
- ``deviceplugin``: the device-plugin mode (the default);
- ``dra``: ``--dra``, the same loop through the DRA driver;
- ``command``: the click command.
"""
