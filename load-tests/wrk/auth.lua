-- GET with the bearer token from $ECHO_TOKEN.
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("ECHO_TOKEN") or "")
