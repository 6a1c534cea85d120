"""Policy training straight from preferences (DPO, RRHF): shared sequence log-prob read-out."""
