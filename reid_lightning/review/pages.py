"""The review's HTML: Jinja2 templates with every value escaped (identity names and paths are user data)."""

from __future__ import annotations

from jinja2 import DictLoader, Environment, select_autoescape

LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }} - reid-lightning review</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1rem 2rem; color: #222; }
header { border-bottom: 1px solid #ccc; padding-bottom: .5rem; margin-bottom: 1rem; }
.progress { font-size: .95rem; }
.bar { background: #eee; height: .6rem; width: 100%; max-width: 40rem; }
.bar div { background: #3a7; height: 100%; }
.groups { display: flex; gap: 2rem; flex-wrap: wrap; }
.group { border: 1px solid #ccc; padding: .5rem; border-radius: .4rem; max-width: 48%; }
figure { display: inline-block; margin: .3rem; text-align: center; font-size: .8rem; }
figure img { max-width: 180px; max-height: 180px; display: block; }
figure.evidence img { outline: 3px solid #36c; }
button { font-size: 1rem; margin: .3rem .3rem .3rem 0; padding: .4rem .9rem; }
kbd { border: 1px solid #999; border-radius: 3px; padding: 0 .3rem; font-size: .8rem; }
.message { background: #fed; border: 1px solid #c96; padding: .5rem; margin-bottom: 1rem; }
table { border-collapse: collapse; } td, th { border-bottom: 1px solid #ddd; padding: .2rem .6rem; text-align: left; }
</style></head>
<body>
<header>
  <strong>Review</strong> of {{ progress.photos }} new photos ·
  <a href="/">next question</a> · <a href="/catalogue">catalogue</a> · <a href="/decisions.csv">decisions (CSV)</a>
  <div class="progress" id="progress">
    settled <span id="settled">{{ progress.settled }}</span> of {{ progress.photos }} photos ·
    <span id="decisions">{{ progress.decisions }}</span> decisions by people,
    {{ progress.automatic }} automatic (pairs with calibrated P(same) &ge; {{ progress.auto_accept }} joined without
    a person) · <span id="open">{{ progress.open }}</span> questions left ·
    about <span id="individuals">{{ progress.individuals }}</span> individuals in these photos
    ({{ progress.known_individuals }} known, {{ progress.new_individuals }} new)
  </div>
  <div class="bar"><div style="width: {{ (100 * progress.settled / progress.photos) | round(1) }}%"></div></div>
</header>
{% if message %}<div class="message" id="message">{{ message }}</div>{% endif %}
{% block content %}{% endblock %}
</body></html>
"""

PHOTO = """{% macro photo(ref, caption, evidence=False) -%}
<figure{% if evidence %} class="evidence"{% endif %}><img src="/photo/{{ ref }}" alt="{{ caption }}">
<figcaption>{{ caption }}</figcaption></figure>
{%- endmacro %}"""

TASK = """{% extends "layout.html" %}{% from "photo.html" import photo %}
{% block content %}
{% if task is none %}
  <h2 id="done">No question left.</h2>
  <p>Every group is settled or has no evidence left to ask about.</p>
{% else %}
<form method="post" action="/answer" id="answer">
  <input type="hidden" name="token" value="{{ token }}">
  <input type="hidden" name="task" value="{{ task.key }}">
  <input type="hidden" name="revision" value="{{ revision }}">
  <h2 id="question">{{ heading }}</h2>
  <p>Tick its photos that show another animal (they move out) and the candidates below that show this one (they
    join it). Saving settles the whole page: the photos left unticked above stay, those below stay apart.</p>
  <div class="groups">
    <div class="group"><h3>{{ animal }}</h3>
    {% for ref, caption, evidence in reference %}{{ photo(ref, caption) }}{% endfor %}
    {% for ref, caption, key in members %}
      <div style="display:inline-block">{{ photo(ref, caption) }}
      {% if not lone %}<br><label><input type="checkbox" name="out" value="{{ key }}" id="out-{{ loop.index }}">
        not this animal</label>{% endif %}
      </div>
    {% endfor %}</div>
  </div>
  {% if candidates %}
  <h3>Also this animal? Tick the ones that are (calibrated probability that the photos in blue frames show one
    animal)</h3>
  <div class="groups">
  {% for candidate in candidates %}
    <div class="group"><label><input type="checkbox" name="join" value="{{ candidate.node }}"
      id="join-{{ loop.index }}"> {{ candidate.title }} · P = {{ "%.2f" | format(candidate.probability) }}
      {% if loop.index < 10 %}<kbd>{{ loop.index }}</kbd>{% endif %}</label><br>
    {% for ref, caption, evidence in candidate.photos %}{{ photo(ref, caption, evidence) }}{% endfor %}</div>
  {% endfor %}
  </div>
  {% endif %}
  {% if not known %}<p><label>Name this animal: <input name="name" id="name" value="" placeholder="{{ name }}">
    </label> (saved with the answer)</p>{% endif %}
  <button name="action" value="save" id="save">Save this page <kbd>C</kbd></button>
  <button name="action" value="cant_tell" id="cant_tell">Can't tell <kbd>T</kbd></button>
</form>
<script>
document.addEventListener("keydown", function (event) {
  if (event.target.tagName === "INPUT" || event.target.tagName === "SELECT" || event.ctrlKey || event.metaKey) return;
  var ids = {t: "cant_tell", c: "save"};
  var key = event.key.toLowerCase(), target = ids[key];
  if (!target && /^[1-9]$/.test(key)) target = "join-" + key;
  var element = target && document.getElementById(target);
  if (element) { event.preventDefault(); element.click(); }
});
</script>
{% endif %}
{% endblock %}"""

CATALOGUE = """{% extends "layout.html" %}
{% block content %}
<h2>Catalogue</h2>
{% if inconsistencies %}<h3>Inconsistencies to look at</h3><ul id="inconsistencies">
  {% for line in inconsistencies %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
<form method="post" action="/export">
  <input type="hidden" name="token" value="{{ token }}">
  <label><input type="checkbox" name="with_unsettled" value="1"> also the photos nobody settled, as proposed</label>
  <button id="export">Write metadata.csv</button>
</form>
{% if written %}<p id="written">Catalogue written to <code>{{ written }}</code>: pass it to
  <code>train.py predict --data.gallery_csv</code> or <code>train.py fit --data.metadata</code>.</p>{% endif %}
<table><tr><th>individual</th><th>new photos</th><th>settled</th><th>rename</th></tr>
{% for row in individuals %}<tr><td>{{ row.name }}</td><td>{{ row.photos }}</td><td>{{ row.settled }}</td>
<td>{% if not row.known %}<form method="post" action="/name"><input type="hidden" name="token" value="{{ token }}">
<input type="hidden" name="node" value="{{ row.node }}"><input name="name" value="{{ row.name }}">
<button>Rename</button></form>{% endif %}</td></tr>{% endfor %}
</table>
{% endblock %}"""

MESSAGE = """{% extends "layout.html" %}{% block content %}<p><a href="/" id="next">Next question</a></p>{% endblock %}"""

ENVIRONMENT = Environment(
    loader=DictLoader({"layout.html": LAYOUT, "photo.html": PHOTO, "task.html": TASK, "catalogue.html": CATALOGUE,
                       "message.html": MESSAGE}),
    autoescape=select_autoescape(default=True, default_for_string=True))


def render(template: str, **values) -> str:
    """The page ``template`` with ``values`` (escaped)."""
    return ENVIRONMENT.get_template(template).render(**values)
