// An ordinary Express app, unmodified but for the last line: serverless-http turns Lambda
// events (function URLs, HTTP APIs, REST APIs) into requests to it.
const express = require('express');
const serverless = require('serverless-http');

const app = express();
app.use(express.json());

const items = new Map([['1', { id: '1', name: 'first' }]]);

app.get('/health', (req, res) => res.send('ok'));

app.get('/items', (req, res) => {
  res.json({ items: [...items.values()], query: req.query });
});

app.get('/items/:id', (req, res) => {
  const item = items.get(req.params.id);
  if (!item) return res.status(404).json({ error: `no item ${req.params.id}` });
  res.set('x-item-id', item.id).json(item);
});

app.post('/items', (req, res) => {
  if (!req.body || typeof req.body.name !== 'string') {
    return res.status(400).json({ error: 'name is required' });
  }
  const id = String(items.size + 1);
  const item = { id, name: req.body.name, tags: req.body.tags ?? [] };
  items.set(id, item);
  res.status(201).location(`/items/${id}`).json(item);
});

app.get('/headers', (req, res) => {
  res.json({
    custom: req.get('x-custom') ?? null,
    cookie: req.get('cookie') ?? null,
    method: req.method,
    path: req.path,
  });
});

app.get('/login', (req, res) => {
  res.cookie('session', 'abc123', { httpOnly: true, path: '/' });
  res.cookie('theme', 'dark');
  res.status(204).end();
});

app.get('/redirect', (req, res) => res.redirect(302, '/items/1'));

app.delete('/items/:id', (req, res) => {
  const existed = items.delete(req.params.id);
  res.status(existed ? 204 : 404).end();
});

module.exports.app = app;
module.exports.handler = serverless(app);
