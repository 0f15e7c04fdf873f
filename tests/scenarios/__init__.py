"""The decision-tree scenario suite: broken training scripts with fixed twins, and a generic agent."""
