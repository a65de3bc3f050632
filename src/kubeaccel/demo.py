"""``kubeaccel demo``: the README's main job on embedded defaults.

Orchestrates both halves from above (it is the only module besides the CLI allowed to): a local
cluster, the device plugin on simulated devices, and an example Spark app that receives them.
"""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--keep", is_flag=True, help="Leave everything running afterwards.")
def demo(keep: bool) -> None:
    """Bring everything up on simulated devices and run an example app."""
    from kubeaccel.errors import KubeaccelError

    raise KubeaccelError("the demo is not assembled yet", hint="see the README's quick start")
