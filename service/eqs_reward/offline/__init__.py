"""The offline tools (``pip install 'eqs-reward[train]'`` or ``[eval]``): the thin GRPO trainer,
hard-query mining and Algorithm 1 (``train``), judge evaluation and the paper's metrics
(``eval_report``), and the real shopper queries they run on (``data``). They reach the service
only through ``eqs_reward.client``."""
