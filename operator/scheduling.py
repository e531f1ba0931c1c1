"""Why the scheduler found no node for a replica, and whether that is a shortage of GPUs: pure functions.

Failover moves work off a site that has no room left for it; only a shortage of GPUs
means that. A replica can be unschedulable for many other reasons (more CPU than a
node has, a volume or a host port already taken, a node selector of the tenant's own)
that another site would not cure: moving on those would move the work between sites
again and again. So a replica counts as waiting for GPUs only when every node of its
site is short of GPUs for it or lost:

- the scheduler's PodScheduled=False message counts the nodes that lack GPUs, as in
  ``0/6 nodes are available: 2 Insufficient nvidia.com/gpu, 4 node(s) didn't match
  Pod's node affinity/selector. …`` (a replica's required node affinity keeps it to its
  site's zone, and the scheduler checks affinity before resources, so every such node
  is one of the site's);
- the site's lost nodes (failed or silent to the health plane, not ready, cordoned: no
  usable GPUs, as placement counts them) come from the operator's node index, not from
  the message: since Kubernetes 1.36 it says ``node(s) had untolerated taint(s)``
  without naming the taint.
"""

from __future__ import annotations

import re

GPU_SHORTAGE = re.compile(r"(\d+) Insufficient nvidia\.com/gpu\b")


def summary(message: str) -> str:
    """The scheduler's first sentence (the nodes and why each was refused), without its preemption report."""
    return message.split(". ", 1)[0].strip()


def nodes_short_of_gpus(message: str) -> int:
    """How many nodes the scheduler found with too few free GPUs for the pod (0 when it names none)."""
    found = GPU_SHORTAGE.search(summary(message))
    return int(found.group(1)) if found else 0


def waits_for_gpus(message: str, site_nodes: int, lost_nodes: int) -> bool:
    """Whether an unschedulable replica waits for GPUs its site lacks: each of the ``site_nodes`` is short
    of GPUs for it (the scheduler's ``message``) or among the ``lost_nodes`` (a site left without nodes
    has no GPUs either). A node of the site refused for anything else, the tenant's own node selector
    included, means it is not."""
    return nodes_short_of_gpus(message) + lost_nodes >= site_nodes
