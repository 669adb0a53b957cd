-- POST /messages/ spread round-robin over the chat ids listed (one per line) in $CHATS_FILE.
local token = os.getenv("ECHO_TOKEN") or ""
local chats = {}
for line in io.lines(os.getenv("CHATS_FILE")) do
  if #line > 0 then chats[#chats + 1] = line end
end
local n = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"

function request()
  n = n + 1
  local chat = chats[(n % #chats) + 1]
  local body = '{"content":"load test message ' .. n .. '","chat_id":"' .. chat .. '"}'
  return wrk.format(nil, "/messages/", nil, body)
end

local non2xx = 0
function response(status, headers, body)
  if status ~= 201 then non2xx = non2xx + 1 end
end
