"""One cluster view of accelerators: devices, their health and holders, for the CLI and the page."""
