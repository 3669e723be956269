"""Pure mathematics: SO(3), IGSO(3), rigid frames, manifolds. No nn modules, no I/O."""
