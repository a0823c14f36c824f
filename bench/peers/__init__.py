"""The peers the gateway is compared with: the same fan-out written the usual ways."""
