"""Node side, second API: a kubelet DRA driver (``resource.k8s.io/v1``) from the same backends as the plugin."""
