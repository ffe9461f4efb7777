"""The LLM provider router: adapters (transport), policy (timeouts, retries, cooldown) and the
chain that applies the policy in priority order. Start at ``app.llm.chain.ProviderChain``."""
