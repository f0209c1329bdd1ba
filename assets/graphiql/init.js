// The gateway's GraphiQL page: a bearer token field (kept in this browser's
// localStorage), queries over POST and subscriptions over the same
// /graphql WebSocket, all on the page's own origin.
(function () {
  "use strict";
  var KEY = "points-gateway.token";
  var input = document.getElementById("token");
  input.value = localStorage.getItem(KEY) || "";
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  var url = location.origin + "/graphql";
  var wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";

  // Whether the operation to run is a subscription, from its text (comments
  // and strings removed). GraphiQL's own choice follows a parse of the
  // editor that can lag behind what it runs, which sent subscriptions over
  // HTTP; this decides from the very text being sent.
  function isSubscription(query, name) {
    var text = query.replace(/"""[\s\S]*?"""|"(?:\\.|[^"\\])*"|#[^\n]*/g, " ");
    if (name) {
      return new RegExp("\\bsubscription\\s+" + name + "\\b").test(text);
    }
    return /^\s*subscription\b/.test(text);
  }

  // The smallest document GraphiQL's fetcher recognises as a subscription.
  function subscriptionDocument(name) {
    return {
      kind: "Document",
      definitions: [{
        kind: "OperationDefinition",
        operation: "subscription",
        name: name ? { kind: "Name", value: name } : undefined,
        variableDefinitions: [],
        directives: [],
        selectionSet: { kind: "SelectionSet", selections: [] },
      }],
    };
  }

  function render() {
    var token = input.value.trim();
    var auth = token ? { Authorization: "Bearer " + token } : {};
    var base = GraphiQL.createFetcher({
      url: url,
      subscriptionUrl: wsUrl,
      headers: auth,
      wsConnectionParams: token ? { authorization: "Bearer " + token } : {},
    });
    var fetcher = function (params, opts) {
      var name = params.operationName || undefined;
      var ast = isSubscription(params.query, name) ? subscriptionDocument(name) : undefined;
      return base(params, Object.assign({}, opts, { documentAST: ast }));
    };
    root.render(
      React.createElement(GraphiQL, {
        fetcher: fetcher,
        defaultEditorToolsVisibility: true,
        shouldPersistHeaders: false,
      })
    );
  }

  // A new token starts the page afresh (schema, editors, subscriptions),
  // rather than swapping the fetcher under a running GraphiQL.
  input.addEventListener("change", function () {
    localStorage.setItem(KEY, input.value.trim());
    location.reload();
  });
  render();
})();
