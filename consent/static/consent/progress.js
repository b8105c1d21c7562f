// Live progress on a request page: follows /ws/requests/<id>/ and rewrites the status line.
// Without JavaScript (or without a socket) the server-rendered line stays as it is.
(function () {
  "use strict";
  var box = document.getElementById("progress");
  var line = document.getElementById("progress-line");
  if (!box || !line || !("WebSocket" in window)) return;

  var STATUS = {
    draft: "draft", recruiting: "recruiting", training: "training",
    completed: "completed", failed: "failed", cancelled: "cancelled"
  };
  var STAGE = {
    advertise_keys: "advertising keys", share_keys: "sharing keys",
    masked_input: "collecting masked inputs", consistency_check: "confirming who took part",
    unmask: "unmasking",
    aggregating: "aggregating", completed: "completed", aborted: "aborted"
  };
  // The page's language: words and phrases rendered by the server (json_script), if present.
  var WORDS = {};
  var words = document.getElementById("progress-words");
  if (words) { try { WORDS = JSON.parse(words.textContent) || {}; } catch (e) { WORDS = {}; } }
  if (WORDS.status) STATUS = WORDS.status;
  if (WORDS.stage) STAGE = WORDS.stage;
  var LINE = WORDS.line || {
    status: "Status: %(status)s", round: "round %(number)s of %(rounds)s",
    round_only: "round %(number)s", accuracy: "accuracy"
  };
  function fill(template, values) {
    return template.replace(/%\((\w+)\)s/g, function (whole, key) { return values[key]; });
  }
  var FINAL = { completed: true, failed: true, cancelled: true };
  // Closed by the server on purpose (not signed in, forbidden, not found): do not retry.
  var NO_RETRY = { 4400: true, 4401: true, 4403: true, 4404: true };
  var rounds = box.getAttribute("data-rounds");
  var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    box.getAttribute("data-progress-path");
  var delay = 1000;

  function describe(event) {
    var parts = [fill(LINE.status, { status: STATUS[event.status] || event.status })];
    if (event.round) {
      parts.push(rounds ? fill(LINE.round, { number: event.round, rounds: rounds })
                        : fill(LINE.round_only, { number: event.round }));
      if (event.stage) parts.push(STAGE[event.stage] || event.stage);
      var accuracy = event.metrics && event.metrics.eval_accuracy;
      if (typeof accuracy === "number") parts.push(LINE.accuracy + " " + Math.round(accuracy * 100) + "%");
    }
    return parts.join(" · ");
  }

  function connect() {
    var socket = new WebSocket(url);
    var finished = false;
    socket.onmessage = function (message) {
      var event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      if (!event || event.type !== "progress") return;
      delay = 1000;
      var text = describe(event);
      if (line.textContent !== text) line.textContent = text;  // announce changes only
      if (FINAL[event.status]) { finished = true; socket.close(1000); }
    };
    socket.onclose = function (close) {
      if (finished || NO_RETRY[close.code]) return;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 60000);
    };
  }

  connect();
})();
