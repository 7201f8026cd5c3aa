"""Files shipped inside the wheel: ``prompts/`` and ``fewshot_bank/`` are the top-level folders
people edit (linked here in a source checkout, copied in by the build), ``queries/`` the real
shopper queries the offline tools use. Read them through ``eqs_reward._resources``."""
