// A small Markdown subset rendered to Preact nodes: text always stays text (no HTML is ever
// parsed), links only for http(s) URLs. Enough for model output: paragraphs, headings, lists,
// fenced and inline code, bold, italics.
import { h, html } from "./ui.js";

function inline(text) {
  const out = [];
  const pattern = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(\[[^\]]+\]\((https?:\/\/[^)\s]+)\))/g;
  let last = 0;
  let match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const token = match[0];
    if (match[1]) out.push(html`<code>${token.slice(1, -1)}</code>`);
    else if (match[2]) out.push(html`<strong>${token.slice(2, -2)}</strong>`);
    else if (match[3]) out.push(html`<em>${token.slice(1, -1)}</em>`);
    else out.push(html`<a href=${match[5]} rel="noopener noreferrer nofollow" target="_blank">${token.slice(1, token.indexOf("]"))}</a>`);
    last = match.index + token.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

export function Markdown({ text }) {
  const lines = String(text ?? "").split("\n");
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      i += 1;
      while (i < lines.length && !lines[i].startsWith("```")) code.push(lines[i++]);
      i += 1;
      blocks.push(html`<pre class="code"><code>${code.join("\n")}</code></pre>`);
    } else if (/^#{1,6}\s/.test(line)) {
      const level = Math.min(line.match(/^#+/)[0].length + 2, 6);
      blocks.push(h(`h${level}`, null, inline(line.replace(/^#+\s/, ""))));
      i += 1;
    } else if (/^\s*([-*]|\d+\.)\s/.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const items = [];
      while (i < lines.length && /^\s*([-*]|\d+\.)\s/.test(lines[i])) {
        items.push(html`<li>${inline(lines[i].replace(/^\s*([-*]|\d+\.)\s/, ""))}</li>`);
        i += 1;
      }
      blocks.push(ordered ? html`<ol>${items}</ol>` : html`<ul>${items}</ul>`);
    } else if (line.trim() === "") {
      i += 1;
    } else {
      const para = [];
      while (i < lines.length && lines[i].trim() !== "" && !lines[i].startsWith("```") && !/^#{1,6}\s/.test(lines[i])
             && !/^\s*([-*]|\d+\.)\s/.test(lines[i])) para.push(lines[i++]);
      blocks.push(html`<p>${inline(para.join("\n"))}</p>`);
    }
  }
  return html`<div class="md">${blocks}</div>`;
}
