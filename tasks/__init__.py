"""The concrete stages of vetro's pipelines and the clients of the services they call."""
