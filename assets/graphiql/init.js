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

  // The text of a document without comments and strings.
  function stripped(query) {
    return query.replace(/"""[\s\S]*?"""|"(?:\\.|[^"\\])*"|#[^\n]*/g, " ");
  }

  // Whether the operation to run is a subscription, from its text (comments
  // and strings removed). GraphiQL's own choice follows a parse of the
  // editor that can lag behind what it runs, which sent subscriptions over
  // HTTP; this decides from the very text being sent.
  function isSubscription(query, name) {
    var text = stripped(query);
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

  // What the editor opens with (until the admin's own work replaces it):
  // this API's usage page, not GraphiQL's generic welcome.
  var EXAMPLE = [
    "# points-gateway. Paste an admin token above, then run (Ctrl-Enter).",
    "# A user's usage page, as the web frontend's UsageDetail reads it;",
    "# the Explorer (left bar) builds other queries by clicking fields.",
    "query UsageDetail($userId: Int = 1, $after: String) {",
    "  usageDetails(userId: $userId, first: 20, after: $after) {",
    "    totalCount",
    "    pageInfo { hasNextPage endCursor }",
    "    edges {",
    "      node { id createdAt type sourceType sourceId amount change balanceAfter description }",
    "    }",
    "  }",
    "}",
    "",
  ].join("\n");

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
      // GraphiQL's operation name also comes from that lagging parse: run
      // right after the editor changed, it can name an operation of the
      // previous text. A name the text does not define is dropped.
      if (params.operationName &&
          !new RegExp("\\b(query|mutation|subscription)\\s+" + params.operationName + "\\b").test(stripped(params.query))) {
        params = Object.assign({}, params, { operationName: undefined });
      }
      var name = params.operationName || undefined;
      var ast = isSubscription(params.query, name) ? subscriptionDocument(name) : undefined;
      return base(params, Object.assign({}, opts, { documentAST: ast }));
    };
    root.render(
      React.createElement(GraphiQL, {
        fetcher: fetcher,
        defaultEditorToolsVisibility: true,
        shouldPersistHeaders: false,
        defaultQuery: EXAMPLE,
        plugins: [GraphiQLPluginExplorer.explorerPlugin()],
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
