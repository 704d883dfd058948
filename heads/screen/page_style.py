"""The suspects page's inline stylesheet and script (constants: no user data ever goes here).

The script only hides cards: the page shows everything without it. It reads each card's
`data-state` and `data-text` (lower-cased path and class names, escaped by the page writer).
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { background: #fff4d6; border: 1px solid #e0c060; padding: .5em .8em; }
.cards { display: flex; flex-direction: column; gap: 10px; }
.card { display: grid; grid-template-columns: 150px 260px 1fr; gap: 12px; padding: 8px;
        border: 1px solid #ccc; border-left: 6px solid #999; border-radius: 4px; }
.card[hidden] { display: none; }
.s-clean { border-left-color: #3a3; } .s-ambiguous { border-left-color: #d90; }
.s-relabeled { border-left-color: #37c; } .s-dropped { border-left-color: #c33; }
.s-out_of_set { border-left-color: #808; }
.main img { width: auto; height: 128px; max-width: 148px; object-fit: cover; }
.noimg { width: 128px; height: 128px; background: #eee; color: #888; display: flex;
         align-items: center; justify-content: center; font-size: 11px; text-align: center; }
.path { font-family: monospace; font-size: 11px; word-break: break-all; }
.state { font-weight: bold; text-transform: uppercase; font-size: 12px; }
.scores td, .scores th { font-size: 12px; padding: 0 6px; }
.examples { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
.examples h4 { margin: 0 0 4px; font-size: 12px; font-weight: normal; }
.examples img, .examples .noimg { height: 80px; width: auto; margin-right: 3px; }
.examples .noimg { width: 80px; }
.given-ex h4 b { color: #555; } .proposed-ex h4 b { color: #37c; }
.flagged img { height: 64px; margin: 2px; } .flagged .path { display: inline; }
#filter { position: sticky; top: 0; background: #fafafa; padding: .5em; border: 1px solid #ddd; }
#filter label { margin-right: 1em; }
"""

SCRIPT = """
(function () {
  var form = document.getElementById("filter");
  if (!form) return;
  form.hidden = false;
  var boxes = form.querySelectorAll("input[type=checkbox]");
  var query = form.querySelector("input[type=search]");
  function apply() {
    var on = {};
    boxes.forEach(function (b) { on[b.value] = b.checked; });
    var text = query.value.toLowerCase();
    document.querySelectorAll(".card").forEach(function (card) {
      card.hidden = !(on[card.dataset.state] && card.dataset.text.indexOf(text) >= 0);
    });
  }
  form.addEventListener("input", apply);
})();
"""
