# A hostile submission: at import it forges the child's status lines and answers (perfect-looking JSON,
# zeros as outputs, and a pickle that would run a command if the grader unpickled it), then exits.
import json
import os
import pickle



class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/PWNED_BY_A_PICKLE",))


status = int(os.environ.get("STATUS_FD", "-1"))
task = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "task.json")))
cases = {case["id"]: {"error": None, "ops": 100, "convs": [], "conv_calls": 0} for case in task["conv_cases"]}
out = task["out"]
json.dump({"cases": cases, "defines": {"CustomConv2DFunction": True, "CustomConv2d": True, "custom_conv2d": True}},
          open(f"{out}/conv.json", "w"))
with open(f"{out}/conv.pt", "wb") as f:
    pickle.dump({"f0.output": Payload()}, f)
json.dump({"losses": [9.0, 0.1], "grader_state_bytes": 1}, open(f"{out}/training.json", "w"))
os.write(status, b"ready\nbegin conv\nend conv\n")
os._exit(0)
